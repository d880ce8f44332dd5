//! The instance registry model: the JSON document of running instances, with unknown fields preserved, and its pure operations.
