"""Attribution and reporting over the usage ledger: finance, workflows, dashboard, exports.

Reports read daily rollups plus the raw tail past the rollup watermark, so figures are exact.
"""

from __future__ import annotations
