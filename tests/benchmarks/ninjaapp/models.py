"""The API's tables: tokens, and four resources that refer to one another."""

from __future__ import annotations

from django.db import models


class Token(models.Model):
    key = models.CharField(max_length=64, unique=True)


class Author(models.Model):
    name = models.CharField(max_length=100)
    email = models.CharField(max_length=254)


class Publisher(models.Model):
    name = models.CharField(max_length=100)
    country = models.CharField(max_length=2)


class Book(models.Model):
    title = models.CharField(max_length=200)
    pages = models.IntegerField()
    author = models.ForeignKey(Author, on_delete=models.CASCADE)
    publisher = models.ForeignKey(Publisher, null=True, on_delete=models.SET_NULL)


class Review(models.Model):
    book = models.ForeignKey(Book, on_delete=models.CASCADE)
    rating = models.IntegerField()
    text = models.TextField()
