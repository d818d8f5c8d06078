"""The projects API and the admin's project and task deletions (all recorded in ActivityLog)."""

from project.activity import activity_for_entity
from project.models import ActivityLog
from tasks.models import Project, Task
from tests.factories import ProjectFactory, TaskFactory

PROJECTS = "/api/v1/projects/"


def test_project_list_runs_the_same_queries_whatever_the_page_size(staff_client, django_assert_num_queries):
    ProjectFactory.create_batch(12)
    with django_assert_num_queries(5):
        assert len(staff_client.get(PROJECTS, {"page_size": 2}).json()["results"]) == 2
    with django_assert_num_queries(5):
        assert len(staff_client.get(PROJECTS, {"page_size": 12}).json()["results"]) == 12


def test_creating_a_project_makes_the_caller_its_owner(staff_client, staff_user):
    response = staff_client.post(PROJECTS, {"name": "Quarter close"}, format="json")
    assert response.status_code == 201
    assert response.json()["owner"] == staff_user.pk
    assert ActivityLog.objects.filter(action="project.create", entity_id=str(response.json()["id"])).exists()


def test_a_duplicate_project_name_is_a_400_naming_the_field(staff_client):
    ProjectFactory(name="Quarter close")
    response = staff_client.post(PROJECTS, {"name": "Quarter close"}, format="json")
    assert response.status_code == 400
    assert "name" in response.json()["error"]["fields"]


def test_admin_delete_selected_tasks_is_recorded(admin_client):
    tasks = TaskFactory.create_batch(3)
    response = admin_client.post(
        "/admin/tasks/task/",
        {"action": "delete_selected", "post": "yes", "_selected_action": [t.pk for t in tasks]},
    )
    assert response.status_code == 302
    assert not Task.objects.filter(pk__in=[t.pk for t in tasks]).exists()
    (logged,) = ActivityLog.objects.filter(action="task.delete")
    assert sorted(logged.metadata["ids"]) == sorted(t.pk for t in tasks)


def test_admin_delete_selected_projects_cascades_to_tasks_and_is_recorded(admin_client):
    projects = ProjectFactory.create_batch(2)
    TaskFactory(project=projects[0])
    response = admin_client.post(
        "/admin/tasks/project/",
        {"action": "delete_selected", "post": "yes", "_selected_action": [p.pk for p in projects]},
    )
    assert response.status_code == 302
    assert not Project.objects.filter(pk__in=[p.pk for p in projects]).exists()
    assert not Task.objects.filter(project__in=projects).exists()
    (logged,) = ActivityLog.objects.filter(action="project.delete")
    assert sorted(logged.metadata["ids"]) == sorted(p.pk for p in projects)


def test_admin_editing_a_task_goes_through_the_service(admin_client):
    task = TaskFactory()
    response = admin_client.post(
        f"/admin/tasks/task/{task.pk}/change/",
        {
            "project": task.project_id,
            "title": task.title,
            "description": "",
            "assignee": "",
            "status": "done",
            "priority": "medium",
            "deadline_0": "",
            "deadline_1": "",
            "tags": "[]",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    task.refresh_from_db()
    assert task.status == "done"
    assert task.completed_at is not None
    assert [row.action for row in activity_for_entity("task", task.pk)] == ["task.update"]
