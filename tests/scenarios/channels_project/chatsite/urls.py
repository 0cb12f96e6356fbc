from django.urls import path

from chat import views

urlpatterns = [
    path("messages/", views.message_count),
    path("messages/new/", views.post_message),
]
