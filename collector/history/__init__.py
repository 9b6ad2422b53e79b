"""History in and out without REST points: readers for the formats traders already have, the
checks every imported row passes, and our own faithful export format (`ours`).

One module per input format; each turns a file into candles with their line numbers plus
rejections naming the line and the reason. Nothing here touches the database: `collector/importer.py`
validates everything first and then writes in one transaction.
"""
