"""One model: a named counter."""

from django.db import models


class Counter(models.Model):
    name = models.SlugField(unique=True)
    value = models.IntegerField(default=0)
    updated = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name}={self.value}"
