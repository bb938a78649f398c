"""GA studies: a generation belongs to a study of its job, a job's progress names its study

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-20
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# 0001 left the generations' unique constraint unnamed: PostgreSQL named it itself, SQLite keeps
# no name, and batch mode (which copies a SQLite table) names it by this convention to drop it.
NAMING = {"uq": "uq_%(table_name)s_%(column_0_N_name)s"}
OLD_UNIQUE = "uq_generations_job_id_generation"  # the convention's name for it
NEW_UNIQUE = "uq_generations_job_id_study_generation"


def _old_unique_name() -> str:
    for constraint in sa.inspect(op.get_bind()).get_unique_constraints("generations"):
        if constraint["column_names"] == ["job_id", "generation"] and constraint["name"]:
            return constraint["name"]
    return OLD_UNIQUE


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("study", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("studies", sa.Integer(), nullable=True))
    old = _old_unique_name()
    with op.batch_alter_table("generations", schema=None, naming_convention=NAMING) as batch_op:
        batch_op.add_column(sa.Column("study", sa.Integer(), server_default="0", nullable=False))
        batch_op.drop_constraint(old, type_="unique")
        batch_op.create_unique_constraint(NEW_UNIQUE, ["job_id", "study", "generation"])


def downgrade() -> None:
    op.execute("DELETE FROM generations WHERE study > 0")  # the old schema holds one study per job
    with op.batch_alter_table("generations", schema=None) as batch_op:
        batch_op.drop_constraint(NEW_UNIQUE, type_="unique")
        batch_op.create_unique_constraint(OLD_UNIQUE, ["job_id", "generation"])
        batch_op.drop_column("study")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("studies")
        batch_op.drop_column("study")
