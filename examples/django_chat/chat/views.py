from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

GREETING = "Chat Rooms"


def index(request: HttpRequest) -> HttpResponse:
    return render(request, "chat/index.html", {"greeting": GREETING})


def room(request: HttpRequest, room_name: str) -> HttpResponse:
    return render(request, "chat/room.html", {"room_name": room_name})


async def hello(request: HttpRequest) -> JsonResponse:
    """A small async JSON view (the benchmark's second case)."""
    user = await request.auser()
    return JsonResponse({"hello": "world", "user": user.get_username() or None})
