import factory

from approvals.models import ApprovalRule, Atom, Topic, Version
from tests.factories import UserFactory


class TopicFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Topic

    title = factory.Sequence(lambda n: f"Topic {n}")
    body = "Original body."
    author = factory.SubFactory(UserFactory)


class AtomFactory(TopicFactory):
    class Meta:
        model = Atom


class VersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Version

    entity_type = "topic"
    entity_id = factory.LazyFunction(lambda: TopicFactory().pk)
    title = factory.Sequence(lambda n: f"Proposed title {n}")
    content = "A short proposed body."
    author = factory.SubFactory(UserFactory)


class RuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ApprovalRule

    name = factory.Sequence(lambda n: f"Rule {n}")
    action = ApprovalRule.Action.APPROVE
    conditions = {"field": "content_length", "op": "lt", "value": 100}
