// A TLCP 2.1.0 client we did not write (npm lightstreamer-client-node 8.0.5, the version IG's
// labs page names): connect to the simulator, subscribe one tick item, print each update as a
// JSON line, exit after `count` updates. Usage: node tick_client.js URL PASSWORD USER ITEM COUNT [TRANSPORT]
const ls = require("lightstreamer-client-node");

const [url, password, user, item, count, transport] = process.argv.slice(2);
const client = new ls.LightstreamerClient(url, null);
client.connectionDetails.setUser(user);
client.connectionDetails.setPassword(password);
client.connectionOptions.setSessionRecoveryTimeout(0);
if (transport) client.connectionOptions.setForcedTransport(transport);
let seen = 0;
client.addListener({
  onStatusChange: (s) => console.log(JSON.stringify({ status: s })),
  onServerError: (code, msg) => {
    console.log(JSON.stringify({ error: code, message: msg }));
    process.exit(2);
  },
});
const sub = new ls.Subscription("DISTINCT", [item], ["UTM", "BID", "OFR"]);
sub.setRequestedSnapshot("no");
sub.addListener({
  onItemUpdate: (u) => {
    console.log(JSON.stringify({ utm: u.getValue("UTM"), bid: u.getValue("BID"), ofr: u.getValue("OFR") }));
    if (++seen >= Number(count)) {
      client.disconnect();
      setTimeout(() => process.exit(0), 100);
    }
  },
  onSubscriptionError: (code, msg) => {
    console.log(JSON.stringify({ suberror: code, message: msg }));
    process.exit(3);
  },
});
client.subscribe(sub);
client.connect();
setTimeout(() => process.exit(4), 30000);
