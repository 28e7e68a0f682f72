"""Where a session's order, history and presence live: one interface (:mod:`.base`), a memory
implementation for one process (:mod:`.memory`) and a Redis one for many (:mod:`.redis`, with its
Lua scripts in ``lua/``). ``tests/brokers/test_broker_contract.py`` runs one suite against both.
"""
