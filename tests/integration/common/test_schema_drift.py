"""Each service's migrated schema is the one its SQLAlchemy tables describe, on both backends.

Each service's migrations run to head on a fresh database, then Alembic's autogenerate
comparison (the one ``revision --autogenerate`` uses) diffs the result against the service's
tables: the store's, the outbox and inbox common/ defines for it, and any table another module
of the service owns. Any difference means the code reads or writes a schema the migrations do
not create (or the reverse), which is exactly what goes unnoticed until production.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import (
    Column,
    Connection,
    DefaultClause,
    ForeignKeyConstraint,
    MetaData,
    String,
    Table,
    inspect,
    text,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from common.dead_letters import dead_letter_table
from common.inbox import inbox_table
from common.migrations import script_location_of, upgrade_to_head, version_table
from common.outbox import outbox_table
from payment_svc import store as payment_store
from payment_svc.analytics import store as analytics_store
from payment_svc.provider import sandbox_ledger
from product_svc import store as product_store
from tests.support.schemas import empty_database
from user_svc import store as user_store

# Every table each service's migrations create, beyond the outbox and inbox.
SERVICE_TABLES: dict[str, Callable[[], list[Table]]] = {
    "payment": lambda: [
        *payment_store.METADATA.sorted_tables,
        *analytics_store.METADATA.sorted_tables,
        sandbox_ledger,
        dead_letter_table("payment"),
    ],
    "product": lambda: [*product_store.METADATA.sorted_tables, dead_letter_table("product")],
    "user": lambda: list(user_store.METADATA.sorted_tables),
}

# Full-text search is built per backend by raw SQL in product migration 0003, outside what
# SQLAlchemy's reflection can describe: SQLite gets an FTS5 virtual table (reflected without
# types or its implicit rowid) plus the shadow tables FTS5 keeps behind it and triggers (never
# reflected); PostgreSQL gets generated tsvector columns with a GIN index instead. These names,
# and only these, are left out of the comparison; the test below checks they exist where
# expected, so the rule cannot hide a table that should not be there.
FTS5_TABLE = "products_fts"
FTS5_SHADOW_TABLES = {
    f"{FTS5_TABLE}_{part}" for part in ("config", "content", "data", "docsize", "idx")
}
POSTGRES_SEARCH_COLUMNS = {("products", "name_tsv"), ("products", "all_tsv")}
POSTGRES_SEARCH_INDEXES = {("products", "ix_products_all_tsv")}
POSTGRES_SEARCH_OBJECTS = POSTGRES_SEARCH_COLUMNS | POSTGRES_SEARCH_INDEXES


def service_metadata(service: str) -> MetaData:
    """One MetaData holding every table of ``service`` as the code uses it."""
    metadata = MetaData()
    for table in [*SERVICE_TABLES[service](), outbox_table(service), inbox_table(service)]:
        table.to_metadata(metadata)
    return metadata


def full_text_search_object(dialect: str) -> Callable[..., bool]:
    """An ``include_object`` rule that leaves out the backend's full-text search objects only."""

    def include(obj: Any, name: str | None, kind: str, reflected: bool, _compare_to: Any) -> bool:
        if kind == "table":
            if dialect == "sqlite":
                return name != FTS5_TABLE and name not in FTS5_SHADOW_TABLES
            # The FTS5 table is SQLite's; PostgreSQL indexes products itself.
            return not (name == FTS5_TABLE and not reflected)
        if dialect == "postgresql" and kind == "column" and reflected:
            return (obj.table.name, name) not in POSTGRES_SEARCH_COLUMNS
        if dialect == "postgresql" and kind == "index" and reflected:
            return (obj.table.name, name) not in POSTGRES_SEARCH_INDEXES
        return True

    return include


def empty_string_default_on_sqlite(
    context: MigrationContext,
    _inspected_column: Any,
    _metadata_column: Any,
    inspected_default: str | None,
    _metadata_default: Any,
    rendered_metadata_default: str | None,
) -> bool | None:
    """False for ``server_default=""`` against SQLite's reflected ``DEFAULT ''``; else Alembic's.

    Alembic's SQLite comparison unquotes a reflected literal only when it holds at least one
    character, so an empty-string default always reads as changed although it is not.
    """
    empty = rendered_metadata_default == "" and inspected_default in ("''", "('')")
    return False if context.dialect.name == "sqlite" and empty else None


def _value(value: Any) -> str:
    """A column attribute as SQL would say it (a server default's text, a type's name)."""
    text_of_default = getattr(getattr(value, "arg", None), "text", None)
    return repr(text_of_default if text_of_default is not None else value)


def describe(difference: Any) -> str:
    """One line per autogenerate difference, e.g. ``remove_index payments.ix_payments_order``."""
    if isinstance(difference, list):  # modify_* of one column: (op, schema, table, column, ...)
        return "; ".join(
            f"{op} {table}.{column}: {_value(code)} in the code, {_value(migrated)} migrated"
            for op, _schema, table, column, _existing, migrated, code in difference
        )
    operation, *_, obj = difference
    if isinstance(obj, ForeignKeyConstraint):
        columns = ", ".join(column.name for column in obj.columns)
        target = obj.elements[0].target_fullname.split(".")[0] if obj.elements else "?"
        return f"{operation} {obj.table.name}({columns}) -> {target} ondelete={obj.ondelete}"
    table = getattr(obj, "table", None)
    return f"{operation} {f'{table.name}.' if table is not None else ''}{getattr(obj, 'name', obj)}"


def schema_differences(
    connection: Connection, service: str, change: Callable[[MetaData], None] | None = None
) -> list[str]:
    """What autogenerate would write to bring the schema to the service's tables.

    ``change`` edits the tables first, for the tests that prove a difference is reported.
    """
    context = MigrationContext.configure(
        connection,
        opts={
            # The version table is Alembic's, not the service's.
            "version_table": version_table(service),
            "compare_type": True,
            "compare_server_default": empty_string_default_on_sqlite,
            "include_object": full_text_search_object(connection.dialect.name),
        },
    )
    metadata = service_metadata(service)
    if change is not None:
        change(metadata)
    return [describe(d) for d in compare_metadata(context, metadata)]


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a database that holds no other tables.

    The PostgreSQL database is the session's, where other tests migrate every service: each
    test gets a schema of its own as the only one on the search path, so the migrations create
    their tables there and reflection (which reads what the search path makes visible) sees
    nothing else.
    """
    async with empty_database(db_url, "drift") as engine:
        yield engine


async def migrated_differences(
    engine: AsyncEngine, service: str, change: Callable[[MetaData], None] | None = None
) -> list[str]:
    await upgrade_to_head(engine, script_location_of(service))
    async with engine.connect() as connection:
        return await connection.run_sync(schema_differences, service, change)


@pytest.mark.parametrize("service", ["payment", "product", "user"])
async def test_the_migrated_schema_matches_the_service_tables(
    engine: AsyncEngine, service: str
) -> None:
    differences = await migrated_differences(engine, service)

    assert differences == []


def _add_column(metadata: MetaData) -> None:
    metadata.tables["users"].append_column(Column("nickname", String(64)))


def _narrow_type(metadata: MetaData) -> None:
    metadata.tables["users"].c.email.type = String(100)


def _add_default(metadata: MetaData) -> None:
    metadata.tables["users"].c.roles.server_default = DefaultClause(text("'customer'"))


def _drop_index(metadata: MetaData) -> None:
    table = metadata.tables["users"]
    table.indexes.remove(next(i for i in table.indexes if i.name == "ix_users_create_time"))


@pytest.mark.parametrize(
    ("change", "reported"),
    [
        (_add_column, "add_column users.nickname"),
        (_narrow_type, "modify_type users.email"),
        (_add_default, "modify_default users.roles"),
        (_drop_index, "remove_index users.ix_users_create_time"),
    ],
)
async def test_a_table_that_differs_from_the_migrations_is_reported(
    engine: AsyncEngine, change: Callable[[MetaData], None], reported: str
) -> None:
    differences = await migrated_differences(engine, "user", change)

    assert [d.split(":")[0] for d in differences] == [reported]


async def test_only_the_full_text_search_objects_the_migration_builds_are_left_out(
    engine: AsyncEngine,
) -> None:
    await upgrade_to_head(engine, script_location_of("product"))

    def search_objects(connection: Connection) -> set[str]:
        schema = inspect(connection)
        if connection.dialect.name == "sqlite":
            return set(schema.get_table_names()) & {FTS5_TABLE, *FTS5_SHADOW_TABLES}
        columns = {f"products.{c['name']}" for c in schema.get_columns("products")}
        indexes = {f"products.{i['name']}" for i in schema.get_indexes("products")}
        return (columns | indexes) & {f"{t}.{n}" for t, n in POSTGRES_SEARCH_OBJECTS}

    async with engine.connect() as connection:
        found = await connection.run_sync(search_objects)

    if engine.dialect.name == "sqlite":
        assert found == {FTS5_TABLE, *FTS5_SHADOW_TABLES}
    else:
        assert found == {f"{t}.{n}" for t, n in POSTGRES_SEARCH_OBJECTS}
