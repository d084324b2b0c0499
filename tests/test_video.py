"""The video module: what it writes it reads back (FFV1 exactly), and explore's MP4 output."""

from __future__ import annotations

import pytest
import torch

from ganforge.errors import ConfigError
from ganforge.video import VideoWriter, frames, fps_of


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".avi"])
def test_written_videos_read_back_frame_by_frame(suffix, tmp_path):
    gen = torch.Generator().manual_seed(0)
    clip = [torch.randint(0, 256, (3, 31, 45), dtype=torch.uint8, generator=gen) for _ in range(5)]
    path = tmp_path / f"c{suffix}"
    with VideoWriter(path, fps=12) as writer:
        for image in clip:
            writer.write(image)
    back = list(frames(path))
    assert [i for i, _ in back] == list(range(5)) and fps_of(path) == pytest.approx(12)
    if suffix == ".mkv":  # lossless
        assert all(torch.equal(a, b) for (_, a), b in zip(back, clip))
    else:  # 4:2:0 pads odd sides by one row/column
        assert back[0][1].shape[1:] in ((31, 45), (32, 46))
    assert [i for i, _ in frames(path, stride=2, max_frames=2)] == [0, 2]


def test_writer_refuses_an_unknown_container(tmp_path):
    with pytest.raises(ConfigError, match="use .mp4"):
        VideoWriter(tmp_path / "x.gifv")


def test_explore_writes_interpolations_and_the_run_progress_as_mp4(gan_run, tmp_path):
    from ganforge.cli import main

    out = tmp_path / "explore"
    assert main(["explore", str(gan_run), "--out", str(out), "--frames", "4", "--n", "2", "--mp4"]) == 0
    assert len(list(frames(out / "interpolation.mp4"))) == 4 + 5  # the last frame held a second, as the GIF
    grids = len(list((gan_run / "samples").glob("*.png")))
    assert len(list(frames(out / "progress.mp4"))) == grids + 5
