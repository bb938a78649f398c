"""Alembic environment: the URL comes from the Config (api.store.alembic_config) or, for the
``alembic`` command line, from LODOTUNE_DATABASE_URL / the embedded default."""

from alembic import context
from sqlalchemy import create_engine

from api.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
if not url:
    from api.settings import Settings

    url = Settings().resolved_database_url


def run_migrations() -> None:
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(url)
    with engine.connect() as connection:
        # SQLite cannot ALTER most things in place: batch mode copies the table instead.
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()
