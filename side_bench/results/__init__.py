"""The results on disk: the run folder and its atomic writes (store), the row layout, schema
versions, upgrades and validation (records, against schema/), per-candidate Parquet records
(candidates), a cell's gallery PNG (gallery).
"""
