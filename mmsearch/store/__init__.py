"""The store folder and everything kept in it: the SQLite catalog, which owns every SQL statement
(``schema``, ``catalog``, ``reads``, ``writes``, ``rows``), the vector index files and the writer lock
(``folder.Store``), re-choosing an index type as the collection grows (``reselect``), and checking and
repairing the folder (``verify``). May import the shared ground, ``encoders.base`` (model identities)
and ``index``; nothing outside this package touches the catalog's tables or its SQL engine.
"""
