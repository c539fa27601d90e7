from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from sluiceway.sync import sync_to_async  # asgiref.sync

GREETING = "Chat Rooms"


def index(request: HttpRequest) -> HttpResponse:
    return render(request, "chat/index.html", {"greeting": GREETING})


def room(request: HttpRequest, room_name: str) -> HttpResponse:
    return render(request, "chat/room.html", {"room_name": room_name})


async def hello(request: HttpRequest) -> JsonResponse:
    """A small async JSON view, with the logged-in user's name."""
    if hasattr(request, "auser"):  # Django 5.0+
        name = (await request.auser()).get_username()
    else:  # Django 4.2: the lazy user loads from the database, so in a thread
        name = await sync_to_async(lambda: request.user.get_username())()
    return JsonResponse({"hello": "world", "user": name or None})
