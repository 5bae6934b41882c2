from django.db import models


class Message(models.Model):
    author = models.CharField(max_length=32, default="anonymous")
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
