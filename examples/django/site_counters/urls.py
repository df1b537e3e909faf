"""The example's routes."""

from django.urls import path

from counters import views

urlpatterns = [
    path("counters/", views.counter_list),
    path("counters/<slug:name>/increment", views.increment),
    path("counters/<slug:name>/hold", views.hold),
]
