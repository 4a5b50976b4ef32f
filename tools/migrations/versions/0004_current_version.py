"""The project's current prompt version: the one commands use unless told otherwise.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add projects.current_version (a version number; NULL: the newest version)."""
    op.add_column("projects", sa.Column("current_version", sa.Integer, nullable=True))


def downgrade() -> None:
    """Drop projects.current_version."""
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("current_version")
