"""TLCP details checked on the wire with a raw WebSocket, and value encoding against the real parser."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import aiohttp
import pytest
import requests
from simkit import RestLogin

from collector.simulator.server import Simulator
from collector.simulator.tlcp import SUBPROTOCOL, encode_values


def params(**kw: str) -> str:
    return "&".join(f"{k}={quote(v, safe='')}" for k, v in kw.items())


async def exchange(url: str, protocol: str, frames: list[str], until: str, timeout: float = 5.0) -> list[str]:
    """Send frames on a raw WebSocket; collect lines until one starts with `until`."""
    lines: list[str] = []
    async with aiohttp.ClientSession() as s, s.ws_connect(url + "/lightstreamer", protocols=(protocol,)) as ws:
        for f in frames:
            await ws.send_str(f)
        async with asyncio.timeout(timeout):
            async for msg in ws:
                for line in msg.data.split("\r\n"):
                    if line:
                        lines.append(line)
                        if line.startswith(until):
                            return lines
    return lines


def test_unsupported_protocol_version_gets_conerr_65(sim: Simulator, rest: RestLogin) -> None:
    create = "create_session\r\n" + params(LS_cid="x", LS_password=rest.ls_password)
    lines = asyncio.run(exchange(sim.url, "TLCP-2.5.0.lightstreamer.com", ["wsok", create], "CONERR"))
    assert lines == ["WSOK", "CONERR,65,Unsupported protocol version"]


def test_control_with_ack_gets_reqok_subok_and_unsub(sim: Simulator, rest: RestLogin) -> None:
    sim.pause_market()
    create = "create_session\r\n" + params(LS_cid="x", LS_send_sync="false", LS_password=rest.ls_password)
    add = "control\r\n" + params(
        LS_reqId="1", LS_op="add", LS_subId="7", LS_mode="DISTINCT",
        LS_group="CHART:CS.D.EURUSD.CFD.IP:TICK CHART:CS.D.USDJPY.MINI.IP:TICK", LS_schema="BID OFR UTM",
        LS_snapshot="false",
    )  # fmt: skip
    delete = "control\r\n" + params(LS_reqId="2", LS_subId="7", LS_op="delete")
    lines = asyncio.run(exchange(sim.url, SUBPROTOCOL, ["wsok", create, add, delete], "UNSUB"))
    assert lines[0] == "WSOK"
    assert lines[1].startswith("CONOK,S") and lines[1].endswith(",50000,1000,*")
    tail = [ln for ln in lines[2:] if not ln.startswith(("SERVNAME", "CLIENTIP", "CONS", "PROBE"))]
    assert tail == ["REQOK,1", "SUBOK,7,2,3", "REQOK,2", "UNSUB,7"]


def test_http_session_recovery_answers_conerr_20(sim: Simulator) -> None:
    r = requests.post(
        sim.url + "/lightstreamer/bind_session.txt?LS_protocol=TLCP-2.4.0",
        data="LS_session=S1&LS_recovery_from=3&LS_polling=true&LS_polling_millis=0&LS_idle_millis=0",
        timeout=5,
    )
    assert (r.status_code, r.text) == (200, "CONERR,20,Session recovery not supported\r\n")


def test_http_create_session_answers_conok_and_loop(sim: Simulator, rest: RestLogin) -> None:
    r = requests.post(
        sim.url + "/lightstreamer/create_session.txt?LS_protocol=TLCP-2.4.0",
        data=params(LS_polling="true", LS_polling_millis="0", LS_cid="x", LS_password=rest.ls_password),
        timeout=5,
    )
    conok, loop, end = r.text.split("\r\n")
    assert conok.startswith("CONOK,S") and conok.endswith(",50000,0,*")
    assert (loop, end) == ("LOOP,0", "")


@pytest.mark.parametrize(
    ("values", "last"),
    [
        (["a|b", "#x", None, "", "50%", "^2", "é,z", "line\r\nbreak", "$5"], None),
        (["1.1", "1.2", "9", "9", "9", "9", "x"], ["1.0", "1.2", "9", "9", "9", "9", None]),
    ],
)
def test_value_encoding_round_trips_through_the_real_client_parser(
    values: list[str | None], last: list[str | None] | None
) -> None:
    from lightstreamer.client import ls_python_client_haxe as haxe

    parse_tools = haxe.com_lightstreamer_client_internal__ParseTools_ParseTools_Fields_
    update = parse_tools.parseUpdate("U,1,1," + encode_values(values, last))
    decoded: list[str | None] = []
    for i in range(1, len(values) + 1):
        fv = update.values.get(i)
        decoded.append(last[i - 1] if fv.index == 0 else fv.params[0])  # index 0 = unchanged
    assert decoded == values


@pytest.mark.parametrize("version", ["TLCP-2.1.0", "TLCP-2.2.0", "TLCP-2.3.0", "TLCP-2.4.0"])
def test_every_protocol_version_ig_accepts_gets_conok(sim: Simulator, rest: RestLogin, version: str) -> None:
    create = "create_session\r\n" + params(LS_cid="x", LS_password=rest.ls_password)
    lines = asyncio.run(exchange(sim.url, f"{version}.lightstreamer.com", ["wsok", create], "CONOK"))
    assert lines[0] == "WSOK" and lines[1].startswith("CONOK,S")


def test_http_create_with_an_unsupported_version_gets_conerr_65(sim: Simulator, rest: RestLogin) -> None:
    body = params(LS_cid="x", LS_polling="true", LS_password=rest.ls_password)
    r = requests.post(f"{sim.url}/lightstreamer/create_session.txt?LS_protocol=TLCP-2.5.0", data=body, timeout=5)
    assert r.text == "CONERR,65,Unsupported protocol version\r\n"
