#!/usr/bin/env python3
"""Generates the labeled DLP corpus (deterministic). Run: python3 generate.py (in this folder).

Each line: {"text": "...", "labels": [{"kind": "...", "value": "..."}]}. Positives carry labels;
look-alike negatives carry none. Every file mixes both.
"""
import base64, json, random, string

R = random.Random(20261121)
A = string.ascii_letters + string.digits
UP = string.ascii_uppercase


def rnd(chars, n):
    return "".join(R.choice(chars) for _ in range(n))


def mixed(n, extra=""):
    # random token guaranteed to mix lower, upper and digits
    while True:
        s = rnd(A + extra, n)
        if any(c.islower() for c in s) and any(c.isupper() for c in s) and any(c.isdigit() for c in s):
            return s


def luhn_complete(prefix, length):
    body = prefix + "".join(R.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for d in string.digits:
        cand = body + d
        s = 0
        for i, c in enumerate(reversed(cand)):
            v = int(c)
            if i % 2 == 1:
                v *= 2
                if v > 9:
                    v -= 9
            s += v
        if s % 10 == 0:
            return cand
    raise AssertionError


def luhn_ok(num):
    s = 0
    for i, c in enumerate(reversed(num)):
        v = int(c)
        if i % 2 == 1:
            v *= 2
            if v > 9:
                v -= 9
        s += v
    return s % 10 == 0


def iban(cc, bban):
    rearranged = bban + cc + "00"
    num = "".join(str(int(c, 36)) for c in rearranged)
    check = 98 - int(num) % 97
    return f"{cc}{check:02d}{bban}"


def group4(s):
    return " ".join(s[i:i + 4] for i in range(0, len(s), 4))


PREFIX = ["Please see ", "FYI: ", "the value is ", "contact: ", "record -> ", "", "Customer note: ",
          "log line: ", "result=", "We found ", "(", "\"", "value:\n"]
SUFFIX = [" thanks.", "", " in the ticket", ")", "\"", ", ok?", ". Next item.", " \n--", " and more"]


def wrap(v):
    return R.choice(PREFIX) + v + R.choice(SUFFIX)


def pos(kind, value, text=None):
    return {"text": text if text is not None else wrap(value), "labels": [{"kind": kind, "value": value}]}


def neg(text):
    return {"text": text, "labels": []}


files = {}

# email
first = ["john", "mary", "a.smith", "dev+alerts", "li_wei", "o'neil", "zoe.k", "ops-team", "x", "j.r.r.tolkien"]
first = [f for f in first if "'" not in f]
doms = ["example.com", "corp.example.org", "mail.co.uk", "uni.edu", "startup.io", "sub.domain.example.net", "xn--bcher-kva.example"]
e = [pos("email", f"{R.choice(first)}{R.randint(0, 99) if R.random() < .4 else ''}@{R.choice(doms)}") for _ in range(40)]
e += [neg(t) for t in [
    "ping me @john on slack", "user@localhost is not routable", "icon@2x.png", "logo@3x.webp", "see foo@bar",
    "npm i lodash@4.17.21", "the @example.com domain", "email me at john at example dot com", "a@b.c",
    "git tag v1.0@HEAD", "styles@media.css", "decorator @property.setter", "name[at]example.com",
    "version pkg@1.2.3-beta", "@scope/pkg@2.0.0", "mailto: (none)", "user@ host.com", "user @host.com",
    "the ratio 3@5.0", "retina asset sprite@2x.jpg", "x@y", "john.doe@", "@example.org", "hello@.com",
    "price is 5 @ 3.99 each", "handle: @dev_team.", "see file report@final.pdf", "admin@@example.com broken",
    "foo@bar.baz1", "weird@-example.com",
]]
files["email"] = e

# phone
p = []
for _ in range(12):
    p.append(pos("phone", f"+1 ({R.randint(201, 989)}) {R.randint(200, 999)}-{R.randint(0, 9999):04d}"))
for _ in range(8):
    p.append(pos("phone", f"+44 20 {R.randint(1000, 9999)} {R.randint(1000, 9999)}"))
for _ in range(6):
    p.append(pos("phone", f"+{R.choice(['33', '49', '34', '39', '61', '81'])}{R.randint(100000000, 999999999)}"))
for _ in range(8):
    p.append(pos("phone", f"{R.randint(201, 989)}-{R.randint(200, 999)}-{R.randint(0, 9999):04d}"))
for _ in range(4):
    p.append(pos("phone", f"({R.randint(201, 989)}) {R.randint(200, 999)}-{R.randint(0, 9999):04d}"))
for _ in range(4):
    p.append(pos("phone", f"020 {R.randint(1000, 9999)} {R.randint(1000, 9999)}"))
for _ in range(4):
    p.append(pos("phone", "0" + str(R.randint(1, 9)) + "".join(f" {R.randint(0, 99):02d}" for _ in range(4))))
p += [neg(t) for t in [
    "order 12345678 shipped", "date 2024-10-15 and 2023-01-01", "timestamp 1699999999", "ISBN 978-3-16-148410-0",
    "version 10.2.3", "zip 94103", "call ext. 1234", "build 20241015.3", "+5 points for effort", "PO#555123",
    "range 100-200-3000", "lat 37.7749, lon -122.4194", "ratio 1:2:3", "id 555.123", "1+1=2",
    "score 123 456", "the year 1999", "account #00012345", "pages 12-13", "ticket 4567-89",
    "UUID 123e4567-e89b-12d3-a456-426614174000", "a 5-digit code 12345", "sha 3f786850e387550fdab836ed7e6dc881de23001b",
    "price $1,234,567.89", "temp -12.5", "2021-03-04T05:06:07Z", "x=+12", "room 101", "+", "matrix 1 2 3 4 5",
]]
files["phone"] = p

# ssn
s = []
while len(s) < 40:
    a, g, n = R.randint(1, 899), R.randint(1, 99), R.randint(1, 9999)
    if a == 666:
        continue
    s.append(pos("ssn", f"{a:03d}-{g:02d}-{n:04d}"))
s += [neg(t) for t in [
    "000-12-3456", "666-12-3456", "900-12-3456", "123-00-4567", "123-45-0000", "date 2024-01-15",
    "part 12-345-6789", "code 1234-56-789", "serial 123-456-789", "phone 555-123-4567", "A123-45-6789B",
    "123-45-67890", "9123-45-6789", "range 10-20-30", "x 12-34-5678", "ssn: redacted", "ver 1-2-3",
    "postcode 123 45", "isbn 0-306-40615-2", "block 999-99-9999", "id 123-45-678", "lot 45-6789",
    "123-45-6789-01", "2023-45-6789", "code 12-345-678",
]]
files["ssn"] = s

# credit cards
c = []
nets = [("4", 16), ("4", 13), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15), ("6011", 16), ("65", 16), ("3528", 16), ("36", 14)]
for i in range(44):
    pre, ln = nets[i % len(nets)]
    num = luhn_complete(pre, ln)
    style = i % 3
    if style == 0:
        v = num
    elif style == 1 and ln == 16:
        v = group4(num)
    elif style == 2 and ln == 16:
        v = "-".join(num[j:j + 4] for j in range(0, 16, 4))
    else:
        v = num
    c.append(pos("credit_card", v))
bad = []
while len(bad) < 15:
    num = "4" + rnd(string.digits, 15)
    if not luhn_ok(num):
        bad.append(num)
c += [neg(f"ref {b}") for b in bad]
c += [neg(t) for t in [
    "4111 1111 1111", "tracking 1Z999AA10123456784", "order 1234567890123", "0000 0000 0000 0000",
    "9999 9999 9999 9995", "IMEI 490154203237518", "numbers 1234 5678 9012 3456 7890",
    "account 12345678901234567890123", "time 1699999999000",
]]
files["credit_card"] = c

# iban
ib = []
bb = {"DE": lambda: rnd(string.digits, 18), "GB": lambda: rnd(UP, 4) + rnd(string.digits, 14),
      "FR": lambda: rnd(string.digits, 23), "NL": lambda: rnd(UP, 4) + rnd(string.digits, 10),
      "ES": lambda: rnd(string.digits, 20), "CH": lambda: rnd(string.digits, 17), "BE": lambda: rnd(string.digits, 12)}
for i in range(40):
    cc = list(bb)[i % len(bb)]
    v = iban(cc, bb[cc]())
    ib.append(pos("iban", group4(v) if i % 2 else v))
ib += [neg(t) for t in [
    "DE89370400440532013001", "GB82WEST12345698765431", "XX89370400440532013000", "DE8937040044053201300",
    "ABCD 1234 5678 9012 3456", "PO12 3456 7890 1234 5678", "ID US12 3456 7890 ABCD EFGH", "SKU DE12AB34CD56EF78GH90",
    "FR14 2004 1010 0505 0001 3M02 607", "NL91 ABNA 0417 1643 01", "model RTX4090 TI SUPER EDITION",
    "ISO3166 DE and GB", "ref GB00 0000 0000 0000 0000 00", "CODE AA11BBBBBBBBBBBB", "US1234567890123456",
]]
files["iban"] = ib

# ipv4 / ipv6
ip = [pos("ipv4", f"{R.randint(1, 223)}.{R.randint(0, 255)}.{R.randint(0, 255)}.{R.randint(1, 254)}") for _ in range(30)]
ip += [pos("ipv4", v) for v in ["10.0.0.1", "192.168.1.1", "127.0.0.1", "8.8.8.8", "172.16.254.1"]]
ip += [neg(t) for t in [
    "version 1.2.3", "999.1.1.1", "1.2.3.4.5", "256.256.256.256", "oid 1.3.6.1.4.1.311", "10.0.0",
    "pi 3.14159", "v2.10.3.1-beta.4", "1.2.3.4.5.6", "file.1.2.3.4.txt", "192.168.1", "ratio 1.5.2",
    "chapter 12.3.4", "a.b.c.d", "semver 0.0.0-alpha", "ip: n/a", "300.20.10.5", "section 4.2.1.1.3",
]]
files["ipv4"] = ip
v6 = ["2001:db8::8a2e:370:7334", "fe80::1ff:fe23:4567:890a", "::1", "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
      "2606:4700:4700::1111", "fd00::abcd:1234", "2001:db8:0:1:1:1:1:1", "fe80::204:61ff:fe9d:f156",
      "2a00:1450:4001:82b::200e", "2001:db8:a0b:12f0::1"]
i6 = [pos("ipv6", v) for v in v6]
for _ in range(20):
    i6.append(pos("ipv6", ":".join(f"{R.randint(0, 65535):x}" for _ in range(8))))
i6 += [neg(t) for t in [
    "time 12:30:45", "mac 00:1A:2B:3C:4D:5E", "std::vector<int>", "fmt::Debug", "ratio 1:2", "a::b::c",
    "timecode 10:30:00:00", "C++ foo::bar()", "url http://host:8080/", "12:30", "::", "hash a:b",
    "json {\"a\":1}", "key:value:other", "mac aa:bb:cc:dd:ee:ff", "1::2::3", "abc:::def",
]]
files["ipv6"] = i6

# aws
aw = [pos("aws_access_key", R.choice(["AKIA", "ASIA", "AROA", "AIDA"]) + rnd(UP + "234567", 16)) for _ in range(30)]
for _ in range(25):
    sec = mixed(40, "+/")
    label = R.choice(["aws_secret_access_key = ", "AWS_SECRET_ACCESS_KEY=", "\"SecretAccessKey\": \"", "aws secret: "])
    aw.append({"text": label + sec + R.choice(["", "\"", " "]), "labels": [{"kind": "aws_secret_key", "value": sec}]})
aw += [neg(t) for t in [
    "AKIA1234", "akiaiosfodnn7example", "AKIAIOSFODNN7EXAMPL", "XKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE0",
    "AKIAIOSFODNN7EXAMPLE_x", "the AKIA prefix", "ASIA is a continent", "AROA region code",
    "commit 3f786850e387550fdab836ed7e6dc881de23001b", "aws region us-east-1",
    "aws_secret_access_key = <your key here>", "AWS secret key rotation policy: 90 days",
    "path /usr/local/share/applications/firefox/", "sha1 da39a3ee5e6b4b0d3255bfef95601890afd80709 aws",
]]
files["aws"] = aw

# tokens
tk = []
for _ in range(8):
    tk.append(pos("github_token", R.choice(["ghp_", "gho_", "ghs_", "ghu_"]) + rnd(A, 36)))
for _ in range(3):
    tk.append(pos("github_token", "github_pat_" + rnd(A + "_", 82)))
for _ in range(8):
    tk.append(pos("gitlab_token", "glpat-" + rnd(A + "_-", 19) + R.choice(A)))
for _ in range(8):
    tk.append(pos("slack_token", R.choice(["xoxb-", "xoxp-", "xoxa-"]) + rnd(string.digits, 12) + "-" + rnd(string.digits, 12) + "-" + rnd(A, 24)))
for _ in range(3):
    tk.append(pos("slack_token", f"https://hooks.slack.com/services/T{rnd(UP + string.digits, 9)}/B{rnd(UP + string.digits, 9)}/{rnd(A, 24)}"))
for _ in range(8):
    tk.append(pos("stripe_key", R.choice(["sk_live_", "sk_test_", "rk_live_"]) + rnd(A, R.randint(24, 40))))
for _ in range(8):
    tk.append(pos("openai_key", R.choice(["sk-proj-", "sk-svcacct-"]) + rnd(A + "_-", R.randint(60, 150)) + R.choice(A)))
for _ in range(3):
    tk.append(pos("openai_key", "sk-" + rnd(A, 20) + "T3BlbkFJ" + rnd(A, 20)))
for _ in range(8):
    tk.append(pos("anthropic_key", "sk-ant-api03-" + rnd(A + "_-", 93) + "AA"))
for _ in range(8):
    tk.append(pos("google_api_key", "AIza" + rnd(A + "_-", 34) + R.choice(A)))
tk += [neg(t) for t in [
    "ghp_short", "ghp_" + rnd(A, 20), "gh_" + rnd(A, 12), "glpat-short", "xoxb-", "xoxz-123456789012",
    "sk_live_short", "pk_live_" + rnd(A, 24), "sk-" + rnd(A, 10), "sk-ant-api03-short", "AIzaShort",
    "the gh CLI uses ghp_ prefixes", "hooks.slack.com/services/", "sk-learn is a library", "task-ant-colony",
    "AIza is a prefix of Google keys", "sk_test_ (placeholder)", "glpat-xxxxxxxxxxxxxxxxxxxx-extra-long-suffix-that-is-longer",
    "xoxb-not-a-token", "sk-proj-tooshort",
]]
files["tokens"] = tk


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


jw = []
for i in range(25):
    h = b64u(json.dumps({"alg": R.choice(["HS256", "RS256", "ES256"]), "typ": "JWT"}).encode())
    p_ = b64u(json.dumps({"sub": str(R.randint(1, 10**9)), "name": R.choice(first), "iat": R.randint(1.6e9, 1.8e9)}).encode())
    sig = b64u(bytes(R.randint(0, 255) for _ in range(32)))
    v = f"{h}.{p_}.{sig}"
    jw.append(pos("jwt", v, R.choice(["Authorization: Bearer ", "token=", "id_token: ", ""]) + v + R.choice(["", " ", "&x=1"])))
jw += [neg(t) for t in [
    "eyJhbGciOi", "eyJ.eyJ.sig", "eyJub3RhIjoiand0In0.eyJzdWIiOiIxIn0.sig", "header.payload.signature",
    "file.name.ext", "a.b.c", "eyJzdWIiOiIxMjMifQ", "eyJabc.def.ghi", "example.com.evil.org",
    "eyJhbGciOiJIUzI1NiJ9", "www.eyJ.com", "some.dotted.identifier.here",
]]
files["jwt"] = jw

pk = []
for i in range(20):
    kind = R.choice(["RSA ", "EC ", "OPENSSH ", "", "ENCRYPTED "])
    body = "\n".join(rnd(A + "+/", 64) for _ in range(R.randint(2, 6)))
    v = f"-----BEGIN {kind}PRIVATE KEY-----\n{body}\n-----END {kind}PRIVATE KEY-----"
    pk.append(pos("private_key", v, R.choice(["key:\n", "", "config = \"\"\"\n"]) + v + R.choice(["", "\n", "\n\"\"\""])))
pk += [neg(t) for t in [
    "-----BEGIN CERTIFICATE-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END CERTIFICATE-----",
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
    "the private key is stored in the vault", "BEGIN PRIVATE KEY", "-----BEGIN PGP SIGNATURE-----",
    "openssl genrsa -out private.key 2048", "private_key_path = /etc/ssl/key.pem",
]]
files["private_key"] = pk

gs = []
for _ in range(25):
    v = mixed(R.randint(32, 64), "_-")
    gs.append(pos("generic_secret", v, R.choice(["secret: ", "password=", "api_key: \"", "token ", "Bearer ", "value "]) + v + R.choice(["", "\"", " ok"])))
for _ in range(10):
    v = rnd("0123456789abcdef", 40)
    gs.append(pos("generic_secret", v, R.choice(["client_secret=", "API_TOKEN: ", "auth token "]) + v))
gs += [neg(t) for t in [
    "commit 3f786850e387550fdab836ed7e6dc881de23001b", "sha256 " + rnd("0123456789abcdef", 64),
    "uuid 123e4567-e89b-12d3-a456-426614174000", "get_user_by_email_address_and_name_v2",
    "this-is-a-very-long-slug-for-an-article-title", "/usr/local/lib/python3/site-packages/requests",
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "ThisIsAVeryLongCamelCaseIdentifierName",
    "aaaaaaaabbbbbbbbccccccccdddddddd11111111", "md5 " + rnd("0123456789abcdef", 32),
    "node_modules/@types/react-dom/index.d.ts", "com.example.application.services.UserService",
    "abcdefghijklmnopqrstuvwxyz0123456789", "ABCDEFGHIJKLMNOPQRSTUVWXYZ1234567890",
    "https://example.com/docs/getting-started/installation", "SELECT_ALL_USERS_WHERE_ACTIVE_IS_TRUE_2024",
]]
files["generic_secret"] = gs

for name, recs in files.items():
    with open(f"{name}.jsonl", "w") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")
print({k: len(v) for k, v in files.items()})
