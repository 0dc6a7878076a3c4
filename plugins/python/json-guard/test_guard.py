"""Unit tests of guard.py, natively: python3 -m unittest discover -s plugins/python/json-guard"""

import json
import unittest

import guard


def settings(**config):
    return guard.parse_config(json.dumps(config))


class ConfigTests(unittest.TestCase):
    def rejects(self, config, needle):
        with self.assertRaises(guard.ConfigError) as caught:
            guard.parse_config(config if isinstance(config, str) else json.dumps(config))
        self.assertIn(needle, str(caught.exception))

    def test_accepts_a_full_config(self):
        s = settings(redact=["Password"], require=["user.id"], methods=["POST"],
                     replacement="***", **{"audit-header": "x-redacted"})
        self.assertEqual(s.redact, frozenset({"password"}))
        self.assertEqual(s.require, (("user", "id"),))
        self.assertEqual(s.audit_header, "x-redacted")

    def test_errors_name_the_field(self):
        self.rejects({"redact": "password"}, "`redact` must be a list of strings, got a string")
        self.rejects({"require": ["user", 3]}, "`require[1]` must be a string, got a number")
        self.rejects({"require": ["user..id"]}, "`require[0]`")
        self.rejects({"redact": ["x"], "methods": ["post"]}, "`methods[0]`")
        self.rejects({"redact": ["x"], "replacement": 1}, "`replacement`")
        self.rejects({"redact": ["x"], "audit-header": "X Audit"}, "`audit-header`")
        self.rejects({"redact": ["x"], "redcat": []}, "unknown field `redcat`")
        self.rejects({}, "nothing to do")
        self.rejects("[1]", "config must be a table")
        self.rejects("{", "not valid JSON")


class InspectTests(unittest.TestCase):
    S = settings(redact=["password", "ssn"], require=["user"])

    def inspect(self, body, method="POST", content_type="application/json", s=None):
        return guard.inspect(s or self.S, method, content_type, body)

    def test_redacts_at_any_depth_and_reports_paths(self):
        v = self.inspect(b'{"user":"ann","password":"p","rows":[{"SSN":"1"}]}')
        self.assertEqual(v.status, 0)
        self.assertEqual(v.redacted, ["password", "rows[0].SSN"])
        self.assertEqual(json.loads(v.body),
                         {"user": "ann", "password": "[redacted]", "rows": [{"SSN": "[redacted]"}]})

    def test_an_untouched_body_is_not_rewritten(self):
        v = self.inspect(b'{ "user": "ann" }')
        self.assertEqual((v.status, v.body, v.redacted), (0, None, []))

    def test_missing_and_null_required_fields_are_refused(self):
        for body in (b'{"password":"p"}', b'{"user":null}', b"", b"  "):
            v = self.inspect(body)
            self.assertEqual(v.status, 400, body)
            self.assertEqual(v.error["error"], "missing_fields")
            self.assertEqual(v.error["missing"], ["user"])

    def test_dotted_paths(self):
        s = settings(require=["user.id"])
        self.assertEqual(self.inspect(b'{"user":{"id":1}}', s=s).status, 0)
        self.assertEqual(self.inspect(b'{"user":"x"}', s=s).error["missing"], ["user.id"])

    def test_bad_json_and_media_types(self):
        self.assertEqual(self.inspect(b"{nope").error["error"], "invalid_json")
        self.assertEqual(self.inspect(b"[1]").error["error"], "invalid_json")
        self.assertEqual(self.inspect(b"a=1", content_type="application/x-www-form-urlencoded").status, 415)
        self.assertEqual(self.inspect(b'{"user":1}', content_type="application/vnd.api+json; charset=utf-8").status, 0)
        self.assertEqual(self.inspect(b'{"user":1}', content_type=None).status, 0)

    def test_other_methods_pass_untouched(self):
        v = self.inspect(b'{"password":"p"}', method="GET")
        self.assertEqual((v.status, v.body), (0, None))


if __name__ == "__main__":
    unittest.main()
