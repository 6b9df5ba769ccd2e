"""Feast definitions for the `feast` CLI, built from this repository's `repo.json`.

Loopline builds the same objects itself (`loopline.data.features.feast_objects`); this file is
here so that `feast apply`, `feast plan` or `feast ui` run in a repository directory see them.
In the project's own feature_repo/, repo.json points at data/sensors.parquet and
data/sensors_rolling.parquet; create them first:

    loopline data generate --out feature_repo/data
    loopline data register --source feature_repo/data/sensors.parquet --repo feature_repo
    cd feature_repo && feast plan
"""

from pathlib import Path

from loopline.batch.feast_output import score_objects
from loopline.data.features import RepoSpec, feast_objects

_HERE = Path(__file__).resolve().parent

# The repository's own views, then the views over batch scores (`loopline score`, scores.json).
for _obj in [*feast_objects(RepoSpec.load(_HERE), _HERE), *score_objects(_HERE)]:
    globals()[f"{type(_obj).__name__.lower()}_{_obj.name}"] = _obj
