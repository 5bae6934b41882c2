"""The room: persist each message, render its fragment once, group_send it to everyone."""

import json

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.template import engines

from .models import Message

FRAGMENT = engines["django"].from_string(
    '<article id="message-{{ m.id }}" class="message"><header><span class="author">'
    '{{ m.author }}</span> <time>{{ m.created_at|date:"H:i" }}</time></header>'
    '<p class="body">{{ m.body }}</p></article>'
)


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        await self.channel_layer.group_add("public", self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard("public", self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        body = str(json.loads(text_data).get("body", ""))[:4000]
        message = await database_sync_to_async(Message.objects.create)(body=body)
        html = FRAGMENT.render({"m": message})
        await self.channel_layer.group_send("public", {"type": "chat.message", "html": html})

    async def chat_message(self, event):
        await self.send(text_data=event["html"])
