from project.api.routers import Router
from tasks.api import ProjectViewSet, TaskViewSet

router = Router()
router.register("projects", ProjectViewSet, basename="project")
router.register("tasks", TaskViewSet, basename="task")

urlpatterns = router.urls
