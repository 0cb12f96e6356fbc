"""A small django-ninja API in the shape of the projects issue 10 and 13 were
measured on (Bearer tokens kept in the database, a dozen operations), and a
Schemathesis suite written against it as its users write one; see
``tests/benchmarks/_newuser.py``."""
