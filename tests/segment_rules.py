"""Test helper: every member of each RFM segment meets the segment's declared rule."""

from __future__ import annotations

import numpy as np
import pandas as pd

from serving import segments as SG


def check_segment_rules(reference: SG.SegmentReference, scores: pd.DataFrame) -> dict[str, int]:
    """Assert that each customer of segment S meets S's rule and none of the rules tried before it.

    Parameters
    ----------
    reference : SegmentReference
        The population the scores' segments are relative to.
    scores : DataFrame
        Rows with ``rfm_segment`` one of :data:`serving.segments.RFM_SEGMENTS` (prospects and
        unscored rows left out by the caller) and the columns :meth:`SegmentReference.segment_inputs` reads.

    Returns
    -------
    dict of str to int
        Customers per segment.
    """
    rules = SG.SEGMENT_RULES
    x = reference.segment_inputs(scores)
    seg = scores["rfm_segment"].to_numpy()
    assert np.isin(seg, SG.RFM_SEGMENTS).all()
    for i, rule in enumerate(rules):
        members = seg == rule.name
        assert rule.test(x)[members].all(), rule.name
        for earlier in rules[:i]:
            assert not earlier.test(x)[members].any(), (rule.name, earlier.name)
    return {rule.name: int((seg == rule.name).sum()) for rule in rules}
