"""Twelve operations on four resources, every one behind a Bearer token looked
up in the database, as most APIs check theirs."""

from __future__ import annotations

from typing import Annotated

from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Field, NinjaAPI, Path, Schema
from ninja.security import HttpBearer

from tests.benchmarks.ninjaapp.models import Author, Book, Publisher, Review, Token

TOKEN = "a-token-kept-in-the-database"
# What PostgreSQL's integer and text columns take: no NUL, ids in range.
Id = Annotated[int, Path(ge=1, le=2**31 - 1)]
Text = r"^[^\x00]*$"


class BearerToken(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> str | None:
        return token if Token.objects.filter(key=token).exists() else None


api = NinjaAPI(auth=BearerToken(), title="Books", urls_namespace="books")


class Error(Schema):
    detail: str


class AuthorIn(Schema):
    name: str = Field(min_length=1, max_length=100, pattern=Text)
    email: str = Field(max_length=254, pattern=Text)


class AuthorOut(AuthorIn):
    id: int


class PublisherIn(Schema):
    name: str = Field(min_length=1, max_length=100, pattern=Text)
    country: str = Field(min_length=2, max_length=2, pattern=Text)


class PublisherOut(PublisherIn):
    id: int


class BookIn(Schema):
    title: str = Field(min_length=1, max_length=200, pattern=Text)
    pages: int = Field(ge=1, le=100_000)
    author_id: int = Field(ge=1, le=2**31 - 1)
    publisher_id: int | None = Field(default=None, ge=1, le=2**31 - 1)


class BookOut(BookIn):
    id: int


class ReviewIn(Schema):
    rating: int = Field(ge=1, le=5)
    text: str = Field(max_length=2000, pattern=Text)


class ReviewOut(ReviewIn):
    id: int
    book_id: int


@api.get("/authors/", response=list[AuthorOut])
def list_authors(request: HttpRequest) -> list[Author]:
    return list(Author.objects.order_by("-id")[:20])


@api.post("/authors/", response={201: AuthorOut})
def create_author(request: HttpRequest, payload: AuthorIn) -> tuple[int, Author]:
    return 201, Author.objects.create(**payload.dict())


@api.get("/authors/{author_id}/", response={200: AuthorOut, 404: Error})
def get_author(request: HttpRequest, author_id: Id) -> Author:
    return get_object_or_404(Author, id=author_id)


@api.get("/publishers/", response=list[PublisherOut])
def list_publishers(request: HttpRequest) -> list[Publisher]:
    return list(Publisher.objects.order_by("-id")[:20])


@api.post("/publishers/", response={201: PublisherOut})
def create_publisher(
    request: HttpRequest, payload: PublisherIn
) -> tuple[int, Publisher]:
    return 201, Publisher.objects.create(**payload.dict())


@api.get("/publishers/{publisher_id}/", response={200: PublisherOut, 404: Error})
def get_publisher(request: HttpRequest, publisher_id: Id) -> Publisher:
    return get_object_or_404(Publisher, id=publisher_id)


@api.get("/books/", response=list[BookOut])
def list_books(request: HttpRequest) -> list[Book]:
    return list(Book.objects.order_by("-id")[:20])


@api.post("/books/", response={201: BookOut, 404: Error})
def create_book(request: HttpRequest, payload: BookIn) -> tuple[int, Book]:
    author = get_object_or_404(Author, id=payload.author_id)
    publisher = (
        None
        if payload.publisher_id is None
        else get_object_or_404(Publisher, id=payload.publisher_id)
    )
    book = Book.objects.create(
        title=payload.title, pages=payload.pages, author=author, publisher=publisher
    )
    return 201, book


@api.get("/books/{book_id}/", response={200: BookOut, 404: Error})
def get_book(request: HttpRequest, book_id: Id) -> Book:
    return get_object_or_404(Book, id=book_id)


@api.delete("/books/{book_id}/", response={204: None, 404: Error})
def delete_book(request: HttpRequest, book_id: Id) -> tuple[int, None]:
    get_object_or_404(Book, id=book_id).delete()
    return 204, None


@api.get("/books/{book_id}/reviews/", response={200: list[ReviewOut], 404: Error})
def list_reviews(request: HttpRequest, book_id: Id) -> list[Review]:
    book = get_object_or_404(Book, id=book_id)
    return list(book.review_set.order_by("-id")[:20])


@api.post("/books/{book_id}/reviews/", response={201: ReviewOut, 404: Error})
def create_review(
    request: HttpRequest, book_id: Id, payload: ReviewIn
) -> tuple[int, Review]:
    book = get_object_or_404(Book, id=book_id)
    return 201, Review.objects.create(book=book, **payload.dict())
