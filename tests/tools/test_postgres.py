"""The same storage code on a real PostgreSQL server, configured by LABELPILOT_DATABASE_URL alone."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from sqlalchemy import inspect

from tools.exporters import ExportFormat, export_project
from tools.groundtruth import coverage, delete_label, sample_tasks, set_label, task_history
from tools.importers import import_file
from tools.labelspec import LabelSpec
from tools.projects import create_project, list_projects
from tools.storage import Base, Database, head_revision

pytestmark = pytest.mark.postgres


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_schema_is_created_on_postgres(pg_db: Database) -> None:
    assert pg_db.url.get_backend_name() == "postgresql"
    assert pg_db.current_revision() == head_revision()
    assert {"projects", "tasks", "annotations", "runs", "predictions"} <= set(
        inspect(pg_db.engine).get_table_names()
    )
    # JSON columns use JSONB on PostgreSQL.
    columns = {c["name"]: c["type"] for c in inspect(pg_db.engine).get_columns("tasks")}
    assert type(columns["data"]).__name__ == "JSONB"
    # The web app's chat history: JSONB documents and TEXT[] tags, as Chainlit's data layer binds them.
    steps = {c["name"]: c["type"] for c in inspect(pg_db.engine).get_columns("steps")}
    assert type(steps["metadata"]).__name__ == "JSONB" and type(steps["tags"]).__name__ == "ARRAY"
    assert "autoCollapse" in steps


def test_the_migrations_build_exactly_the_orm_schema_on_postgres(pg_db: Database) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with pg_db.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_full_flow_on_postgres(pg_db: Database, tmp_path: Path) -> None:
    create_project(pg_db, "pg", spec=LabelSpec.from_classes(["pos", "neg"]))
    rows = [
        {"id": f"r{i}", "text": f"review {i} ünïcode", "label": "pos" if i % 2 else ""} for i in range(30)
    ]
    source = write_csv(tmp_path / "reviews.csv", rows)
    report = import_file(pg_db, "pg", source, label_column="label")
    assert (report.tasks_added, report.labels_added) == (30, 15)
    again = import_file(pg_db, "pg", source, label_column="label")
    assert (again.tasks_added, again.tasks_unchanged, again.labels_added) == (0, 30, 0)

    set_label(pg_db, "pg", "r0", "neg")
    set_label(pg_db, "pg", "r1", "neg")
    delete_label(pg_db, "pg", "r3")
    assert [h.value for h in task_history(pg_db, "pg", "r1")] == ["pos", "neg"]
    cov = coverage(pg_db, "pg")
    assert cov.labeled_count == 15 and {c.label: c.count for c in cov.classes} == {"pos": 13, "neg": 2}
    assert len(sample_tasks(pg_db, "pg", 100)) == 15

    exported = export_project(
        pg_db, "pg", fmt=ExportFormat.jsonl, ground_truth_only=True, exports_dir=tmp_path / "exports"
    )
    lines = [json.loads(line) for line in Path(exported.path).read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 15
    assert {line["id"]: line["label"] for line in lines}["r0"] == "neg"
    assert [p.name for p in list_projects(pg_db)] == ["pg"]


def test_failed_import_leaves_postgres_unchanged(pg_db: Database, tmp_path: Path) -> None:
    from tools.errors import InputFileError

    create_project(pg_db, "pg", spec=LabelSpec.from_classes(["pos", "neg"]))
    rows = [{"id": f"r{i}", "text": f"t{i}", "label": "pos"} for i in range(5000)]
    rows.append({"id": "bad", "text": "x", "label": "maybe"})
    source = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(InputFileError, match="line 5002"):
        import_file(pg_db, "pg", source, label_column="label")
    assert coverage(pg_db, "pg").task_count == 0
