from django.http import HttpRequest, JsonResponse
from django.urls import path


async def hello(request: HttpRequest) -> JsonResponse:
    """A small async JSON view: what an API endpoint of a Django project looks like."""
    return JsonResponse({"message": "Hello, World!", "path": request.path})


urlpatterns = [path("json", hello), path("", hello)]
