"""A loopback stand-in for IG: REST gateway + Lightstreamer TLCP-2.4.0 + fault controls.

`collector.simulator.server.Simulator` is the entry point (see its module docstring for the
clock contract and the `/_sim/` control API); `market` is the pure price/tick/candle core,
`rest` and `tlcp` the two protocols, `cli` the `ig-collector simulator` command. Nothing is
imported here so `ig-collector --help` stays instant.
"""
