"""`core.db.query`: a statement reaches the server whole, the parts it includes written into it."""

from __future__ import annotations

from core.db import QUERIES_DIR, query


def test_every_statement_reaches_the_server_with_its_includes_expanded() -> None:
    statements = sorted(path.stem for path in QUERIES_DIR.glob("*.sql"))
    assert statements
    for name in statements:
        assert "\\ir" not in query(name), name


def test_the_bar_of_trades_is_one_text_written_into_every_statement_that_makes_one() -> None:
    bar = (QUERIES_DIR / "parts" / "trade_bar.sql").read_text(encoding="utf-8").rstrip("\n")
    including = sorted(
        path.stem
        for path in QUERIES_DIR.glob("*.sql")
        if "\\ir parts/trade_bar.sql" in path.read_text()
    )
    assert including == ["promote_batch", "restate_candles", "stream_bars", "ticker_snapshots"]
    for name in including:
        assert bar in query(name), name
