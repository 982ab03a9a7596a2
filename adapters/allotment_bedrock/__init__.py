"""allotment for Amazon Bedrock: governed boto3 clients and invocation-log ingestion.

``govern(client, runtime, credential=...)`` enforces budgets; ``allotment ingest bedrock`` backfills.
"""

from __future__ import annotations

from allotment_bedrock.errors import BedrockCallDenied
from allotment_bedrock.governor import Governor, govern, governor_of
from allotment_bedrock.streams import GovernedStream

__all__ = ["BedrockCallDenied", "GovernedStream", "Governor", "govern", "governor_of"]
