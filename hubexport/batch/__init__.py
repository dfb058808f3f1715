"""Many models: worker processes, their limits, and what a run keeps; no TensorFlow here.

    scheduler  runs jobs in worker processes, longest first, memory-aware, backfilling
    worker     `python -m hubexport.batch.worker`: exports and checks, a job at a time
    limits     a job's time and memory limits; `hubexport check` of one model
    memory     what /proc says of memory (the one reader)
    shards     --shard=I/N: the same split on every machine
    estimates  the peak memory and seconds expected of a model
    state      export_all's records, resuming and lock

hubexport.catalog (export_all, check over many) is built on these; nothing
here imports the catalog or the CLI.
"""
