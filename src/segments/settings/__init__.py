"""Every stage's settings as light data: one pydantic model per stage, each in its own module
that imports pydantic and `segments.names` only (validators that need polars import it when
they run). `segments.config` composes them into `SegmentsConfig`; `segments.settings.load` is
the one TOML reader and finds the shipped configs."""
