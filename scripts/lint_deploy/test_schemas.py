"""`strict`: unknown properties fail wherever a schema names some."""
import unittest

from .schemas import strict


class StrictTest(unittest.TestCase):
    def test_closes_every_object_that_names_properties(self):
        schema = {"type": "object", "properties": {
            "spec": {"type": "object", "properties": {"a": {"type": "string"}}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "extra": {"properties": {"c": {}}, "additionalProperties": True},
            "items": {"type": "array", "items": [{"properties": {"b": {}}}]},
        }}
        self.assertEqual(strict(schema), {"type": "object", "additionalProperties": False, "properties": {
            "spec": {"type": "object", "additionalProperties": False, "properties": {"a": {"type": "string"}}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "extra": {"properties": {"c": {}}, "additionalProperties": True},  # said: kept
            "items": {"type": "array", "items": [{"properties": {"b": {}}, "additionalProperties": False}]},
        }})


if __name__ == "__main__":
    unittest.main()
