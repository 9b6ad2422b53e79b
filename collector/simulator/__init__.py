"""A loopback stand-in for IG: REST gateway + Lightstreamer TLCP-2.4.0 + fault controls.

`collector.simulator.server.Simulator` is the entry point (see its module docstring for the
`/_sim/` control API); `clock` is its market clock and how a collector is given it, `market` the
pure price/tick/candle core, `rest*` and `tlcp*` / `ls_session` the two protocols (one module per
job: docs/design.md §11), `cli` the `ig-collector simulator` command. Production code imports
none of it. Nothing is imported here so `ig-collector --help` stays instant.
"""
