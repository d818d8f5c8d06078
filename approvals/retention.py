"""Approvals' tables under the platform's retention (project/retention.py).

Notification digests grow with staff and time (one row per person per digest interval at most):
90 days are kept for the admin, older ones archived (archive.approvals_notificationdigest), since
they say what people were told. Versions and rule evaluations are not under retention.
"""

from project.retention import ARCHIVE, RetentionPolicy, register_retention

register_retention(
    RetentionPolicy(
        model="approvals.NotificationDigest",
        age_field="sent_at",  # digest_sent_idx
        keep_days=90,
        mode=ARCHIVE,
        kept="90 days of notification digests",
    )
)
