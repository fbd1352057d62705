"""processfork.transformers: a Hugging Face transformers ``Cache`` whose KV lives in
ProcessFork pages (docs/adapter-transformers.md).

    import processfork
    from processfork.transformers import ProcessForkCache, geometry_for

    print(geometry_for(model, page_tokens=16))      # for `processfork serve --geometry ...`
    with processfork.connect() as c, ProcessForkCache(c, model) as cache:
        out = model.generate(ids, past_key_values=cache, max_new_tokens=32)
        snap = cache.snapshot(name="after-answer")
        kids = cache.fork(3, detach=True)           # hand kids[i].id to other processes
    # elsewhere: ProcessForkCache.from_branch(client, kid_id, model) or .from_snapshot(client, cid, model)
"""
from processfork.transformers._cache import ProcessForkCache, ProcessForkCacheError, cache_namespace
from processfork.transformers._geometry import ModelGeometry, check_geometry, geometry_for, model_geometry
from processfork.transformers._layer import ProcessForkLayer

__all__ = ["ProcessForkCache", "ProcessForkCacheError", "cache_namespace", "ProcessForkLayer", "ModelGeometry",
           "check_geometry", "geometry_for", "model_geometry"]
