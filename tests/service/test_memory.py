import numpy as np
import pytest

from service.memory import PeakSampler, give_large_blocks_back, peak_rss_bytes, reset_peak_rss


def test_the_peak_of_a_block_counts_memory_it_gave_back_before_the_end():
    give_large_blocks_back()
    size = 64 << 20
    with PeakSampler() as peak:
        block = np.ones(size // 8)  # touched: resident
        del block
    assert 0.9 * size <= peak.peak_delta <= 1.5 * size


def test_the_kernels_peak_can_be_reset_to_what_is_resident_now():
    if not reset_peak_rss():
        pytest.skip("no /proc/self/clear_refs here: PeakSampler samples instead (the test above)")
    give_large_blocks_back()
    block = np.ones((128 << 20) // 8)
    del block
    assert reset_peak_rss()
    after_reset = peak_rss_bytes()
    block = np.ones((32 << 20) // 8)
    del block
    assert (32 << 20) * 0.9 <= peak_rss_bytes() - after_reset <= (32 << 20) * 1.5
