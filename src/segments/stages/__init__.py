"""The per-person stages: pure polars functions over one bucket of people's rows, each returning
one row per `one_id` (`rfm`, `predict`, `behaviour`, `interests`, `community`, `promo`).

A stage takes `pl.LazyFrame`s and settings and returns a `pl.LazyFrame`; it never collects
and never touches a file, so the same function runs in-process or on a Spark worker. The few
steps that need everyone (RFM cut points, the BG/NBD fit, PageRank, the interest graph) are
separate functions the weekly build calls on the collected features."""
