import pytest

from ecolora.network.ledger import ByteLedger


def test_round_and_client_totals():
    ledger = ByteLedger()
    ledger.record(1, 0, "down", 100, 50)
    ledger.record(1, 0, "up", 40, 20)
    ledger.record(1, 3, "up", 60, 30)
    ledger.record(2, 3, "down", 7, 3)
    assert ledger.round_totals(1) == {"upload_bytes": 100, "download_bytes": 100, "upload_params": 50, "download_params": 50}
    assert ledger.per_client(1)[3] == {"upload_bytes": 60, "download_bytes": 0, "upload_params": 30, "download_params": 0}
    assert ledger.totals()["download_bytes"] == 107
    restored = ByteLedger()
    restored.load_state_dict(ledger.state_dict())
    assert restored.totals() == ledger.totals()


def test_bad_records_rejected():
    with pytest.raises(ValueError, match="direction must be 'up' or 'down'"):
        ByteLedger().record(1, 0, "sideways", 1, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be >= 0"):
        ByteLedger().record(1, 0, "up", -1, 1)
