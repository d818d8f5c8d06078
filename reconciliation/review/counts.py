"""Live review counts of an execution, next to its summary (issue 13: a reviewer polling the
summary must see their work).

The summary an execution writes when it finishes is a snapshot of the run. Every review action
on its work (confirm, reject, unmatch, resolve an exception) adds one to a counter in
`Execution.review`, in the action's own transaction, and after commit drops the cached summary
body: the next GET reads the new counts, so its body and its ETag change. One narrow UPDATE of
one row per action; nothing is recounted.
"""

from functools import partial

from django.core.cache import cache
from django.db import connection, transaction

from reconciliation.selectors import SUMMARY_KEY

# Counter names, as they appear in the summary's `review` block.
CONFIRMED = "confirmed"
REJECTED = "rejected"
UNMATCHED = "unmatched"
EXCEPTIONS_RESOLVED = "exceptions_resolved"


def summary_cache_drop(execution_id: int) -> None:
    cache.delete(SUMMARY_KEY.format(execution_id=execution_id))


def review_count(execution_id: int | None, counter: str) -> None:
    """Count one review action on `execution_id`'s work (manual matches belong to no execution)."""
    if execution_id is None:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE reconciliation_execution
            SET review = jsonb_set(review, ARRAY[%s], to_jsonb(coalesce((review ->> %s)::bigint, 0) + 1))
                         || jsonb_build_object('last_review_at', now())
            WHERE id = %s
            """,
            [counter, counter, execution_id],
        )
    # Dropped after commit (a reader meanwhile may have cached the body from before it); robust:
    # the review has committed, a cache that is away must not turn it into an error.
    transaction.on_commit(partial(summary_cache_drop, execution_id), robust=True)
