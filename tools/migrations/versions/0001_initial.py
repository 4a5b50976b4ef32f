"""Initial schema: projects, tasks, annotations, prompt versions, runs, predictions.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    """Create the first version of every table."""
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("label_spec", JSON, nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("meta", JSON, nullable=False),
        _timestamp("created_at"),
        sa.UniqueConstraint("project_id", "external_id", name="uq_tasks_project_external_id"),
    )
    op.create_index("ix_tasks_project_hash", "tasks", ["project_id", "content_hash"])
    op.create_table(
        "annotations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
        sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("value", JSON, nullable=True),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("source", sa.String(50), nullable=False),
        _timestamp("created_at"),
    )
    op.create_index("ix_annotations_task", "annotations", ["task_id", "id"])
    op.create_index("ix_annotations_project_id", "annotations", ["project_id"])
    op.create_table(
        "prompt_versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("prompt_versions.id"), nullable=True),
        sa.Column("instructions", sa.Text, nullable=False),
        sa.Column("label_descriptions", JSON, nullable=False),
        sa.Column("few_shot", JSON, nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("reasoning", sa.Boolean, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        _timestamp("created_at"),
        sa.UniqueConstraint("project_id", "number", name="uq_prompt_versions_number"),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
        sa.Column("prompt_version_id", sa.Integer, sa.ForeignKey("prompt_versions.id"), nullable=True),
        sa.Column("kind", sa.String(50), nullable=False),
        sa.Column("status", sa.String(50), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("job_key", sa.String(64), nullable=True),
        sa.Column("scope", JSON, nullable=False),
        sa.Column("stats", JSON, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        _timestamp("created_at"),
        _timestamp("finished_at", nullable=True),
    )
    op.create_index("ix_runs_project_id", "runs", ["project_id"])
    op.create_index("ix_runs_job_key", "runs", ["job_key"])
    op.create_table(
        "predictions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("task_id", sa.Integer, sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("value", JSON, nullable=True),
        sa.Column("confidence", sa.Float, nullable=True),
        sa.Column("reasoning", sa.Text, nullable=True),
        sa.Column("input_tokens", sa.Integer, nullable=True),
        sa.Column("output_tokens", sa.Integer, nullable=True),
        sa.Column("cached_tokens", sa.Integer, nullable=True),
        sa.Column("cost_usd", sa.Float, nullable=True),
        sa.Column("latency_ms", sa.Float, nullable=True),
        sa.Column("error_kind", sa.String(50), nullable=True),
        sa.Column("error_message", sa.Text, nullable=True),
        sa.Column("examples", JSON, nullable=True),
        _timestamp("created_at"),
        sa.UniqueConstraint("run_id", "task_id", name="uq_predictions_run_task"),
    )
    op.create_index("ix_predictions_task_id", "predictions", ["task_id"])
