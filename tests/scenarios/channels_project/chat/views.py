from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from chat.models import Message


async def message_count(request):
    """How many messages there are, read with the async ORM."""
    count = await Message.objects.acount()
    latest = await Message.objects.order_by("-created").afirst()
    return JsonResponse({"count": count, "latest": latest.text if latest else None})


@csrf_exempt
@require_POST
def post_message(request):
    """Store a message posted from a form."""
    message = Message.objects.create(
        author=request.POST.get("author", "anonymous"), text=request.POST["text"]
    )
    return JsonResponse({"id": message.pk})
