"""A list split between N machines (`--shard=I/N`), the same split on every one; no TensorFlow.

    mine = shards.select_shard(items, "0/4", cost=lambda item: ...)
"""

from hubexport.errors import UserError


def parse_shard(spec):
    """"I/N" -> (I, N), with 0 <= I < N."""
    try:
        index, count = (int(part) for part in spec.split("/"))
        if not 0 <= index < count:
            raise ValueError
    except ValueError:
        raise UserError(
            f"--shard={spec} is not a shard; allowed: I/N with 0 <= I < N, e.g. "
            "--shard=0/4 for the first of four machines"
        ) from None
    return index, count


def select_shard(items, spec, cost):
    """The items of shard `spec` ("I/N", or None for all), in their order.

    Every machine computes the same split: items in order of decreasing
    cost(item), each to the shard with the least cost so far, so the shards
    take about equally long.
    """
    if spec is None:
        return list(items)
    index, count = parse_shard(spec)
    totals = [0.0] * count
    mine = set()
    for position, item in sorted(enumerate(items), key=lambda p: (-cost(p[1]), p[0])):
        shard = totals.index(min(totals))
        totals[shard] += cost(item)
        if shard == index:
            mine.add(position)
    return [item for position, item in enumerate(items) if position in mine]
