"""The example's routes."""

from counters import views
from django.urls import path

urlpatterns = [
    path("counters/", views.counter_list),
    path("counters/<slug:name>/increment", views.increment),
    path("counters/<slug:name>/hold", views.hold),
]
