//! The error taxonomy as data and the classification of an agent failure text into a category.
