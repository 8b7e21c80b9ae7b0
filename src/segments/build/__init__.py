"""The weekly tag build: staging by bucket (`staging`), the two bucket passes (`passes`) and the
week's global steps (`week`)."""

from segments.build.passes import BucketContext, pass1_bucket, pass2_bucket, round_money
from segments.build.staging import Staging, bucket_of, stage_tables
from segments.build.week import (
    BuildInputs,
    BuiltTags,
    Learned,
    Touched,
    build_tags,
    inputs_from_state,
)

__all__ = [
    "BucketContext",
    "BuildInputs",
    "BuiltTags",
    "Learned",
    "Staging",
    "Touched",
    "bucket_of",
    "build_tags",
    "inputs_from_state",
    "pass1_bucket",
    "pass2_bucket",
    "round_money",
    "stage_tables",
]
