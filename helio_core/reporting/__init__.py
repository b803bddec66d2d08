"""What the evaluation stages report beside their tables: bytes shipped per label source, figures and curves,
and the students' tables as text."""
