"""``ffsecure demo``: a whole federation on one machine, every role a real process.

``layout`` writes the files each role starts from (data shards, site.toml,
federation.toml), ``procs`` starts and stops the child processes, ``runner``
runs the phases through the real CLIs, ``summary`` turns what they printed
into summary.json and the closing table.
"""
