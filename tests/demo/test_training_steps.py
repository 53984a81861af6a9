"""training.common.StepBook, the bookkeeping every training loop shares: the smoothed loss every 10 steps
(and on the last), the resumable state every 500 steps, at the end when asked and when --max-minutes runs
out (then the loop is told to stop, and the step is remembered)."""
import torch

from training.common import StepBook


class Bar:
    def __init__(self):
        self.postfix = []

    def set_postfix(self, **kw):
        self.postfix.append(kw)


class Rows:
    def __init__(self):
        self.rows = []

    def write(self, **row):
        self.rows.append(row)


def test_smoothed_loss_every_ten_steps_and_on_the_last(tmp_path):
    bar, log = Bar(), Rows()
    book = StepBook("t", bar, log, tmp_path / "state.pt", total=25, max_minutes=None)
    for step in range(25):
        book.report(step, torch.tensor(float(step)))
    assert [r["step"] for r in log.rows] == [0, 10, 20, 24]
    assert book.smoothed == 0.8 * (0.8 * (0.8 * 0 + 0.2 * 10) + 0.2 * 20) + 0.2 * 24  # hand-derived
    assert bar.postfix[-1] == {"loss": f"{book.smoothed:.4f}"}


def test_state_every_500_steps_and_at_the_end_when_asked(tmp_path):
    path = tmp_path / "state.pt"
    for at_end, expected in ((False, [500, 1000]), (True, [500, 1000, 1200])):
        book = StepBook("t", Bar(), Rows(), path, total=1200, max_minutes=None, save_at_end=at_end)
        saved = []
        for step in range(1200):
            assert book.checkpoint(step, dict) is False
            if path.exists():
                saved.append(torch.load(path, weights_only=True)["step"])
                path.unlink()
        assert saved == expected


def test_out_of_time_saves_and_stops(tmp_path):
    path = tmp_path / "state.pt"
    book = StepBook("t", Bar(), Rows(), path, total=100, max_minutes=1)
    assert book.checkpoint(3, lambda: {"w": torch.ones(1)}) is False and not path.exists()
    book.deadline.end = 0  # the time is up
    assert book.checkpoint(4, lambda: {"w": torch.ones(1)}) is True
    assert torch.load(path, weights_only=True)["step"] == 5 and book.stopped_at == 5
    assert book.checkpoint(99, dict) is False  # the last step: saved, nothing left to stop
