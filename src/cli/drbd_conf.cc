#include "cli/drbd_conf.h"

#include <cctype>
#include <cstdio>

namespace repld::drbd {
namespace {

struct Token {
  enum class Kind { kWord, kQuoted, kOpen, kClose, kSemicolon, kEnd };
  Kind kind = Kind::kEnd;
  Word word;  // the text and position of every kind (the text of '{' is "{")
};

// Punctuation and whitespace end a word; '#' does too, as it starts a comment.
bool IsWordByte(char c) {
  return c > ' ' && c < 0x7f && c != '{' && c != '}' && c != ';' && c != '"' && c != '#';
}

// Splits the text into tokens, tracking line and column. An error is reported as the first
// one and ends the token stream.
class Lexer {
 public:
  Lexer(std::string_view text, const std::string& path) : text_(text), path_(path) {}

  Result<Token> Next() {
    SkipBlanksAndComments();
    Token t;
    t.word.where = Here();
    if (pos_ >= text_.size()) {
      t.word.end = t.word.where;
      return t;
    }
    const char c = text_[pos_];
    if (c == '{' || c == '}' || c == ';') {
      t.kind = c == '{' ? Token::Kind::kOpen
                        : (c == '}' ? Token::Kind::kClose : Token::Kind::kSemicolon);
      t.word.text = std::string(1, c);
      Advance();
    } else if (c == '"') {
      auto text = Quoted();
      if (!text.ok()) return text.status();
      t.kind = Token::Kind::kQuoted;
      t.word.text = std::move(text).value();
    } else if (IsWordByte(c)) {
      t.kind = Token::Kind::kWord;
      while (pos_ < text_.size() && IsWordByte(text_[pos_])) {
        t.word.text += text_[pos_];
        Advance();
      }
    } else {
      char shown[8];
      std::snprintf(shown, sizeof shown, "0x%02x", static_cast<unsigned char>(c));
      return Error(t.word.where, std::string("unexpected byte ") + shown +
                                     "; expected a keyword, a value, '{', '}' or ';' (is this "
                                     "a drbd.conf?)");
    }
    t.word.end = Here();
    return t;
  }

  Status Error(Location at, const std::string& what) const {
    return Status::Invalid(path_ + ":" + std::to_string(at.line) + ":" + std::to_string(at.column) +
                           ": " + what);
  }

 private:
  Location Here() const { return {line_, column_}; }

  void Advance() {
    if (text_[pos_] == '\n') {
      ++line_;
      column_ = 1;
    } else {
      ++column_;
    }
    ++pos_;
  }

  void SkipBlanksAndComments() {
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c == '#') {
        while (pos_ < text_.size() && text_[pos_] != '\n') Advance();
      } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
        Advance();
      } else {
        return;
      }
    }
  }

  // A "double quoted" argument on one line; \" and \\ stand for " and \.
  Result<std::string> Quoted() {
    const Location start = Here();
    Advance();
    std::string text;
    while (pos_ < text_.size() && text_[pos_] != '\n' && text_[pos_] != '\0') {
      char c = text_[pos_];
      Advance();
      if (c == '"') return text;
      if (c == '\\' && pos_ < text_.size() && (text_[pos_] == '"' || text_[pos_] == '\\')) {
        c = text_[pos_];
        Advance();
      }
      text += c;
    }
    return Error(start, "unterminated string: expected a closing '\"' on the same line");
  }

  std::string_view text_;
  const std::string& path_;
  size_t pos_ = 0;
  uint32_t line_ = 1;
  uint32_t column_ = 1;
};

bool IsKeyword(const std::string& text) {
  if (text.empty() || !std::isalpha(static_cast<unsigned char>(text[0]))) return false;
  for (char c : text) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')) return false;
  }
  return true;
}

std::string Found(const Token& t) {
  switch (t.kind) {
    case Token::Kind::kEnd:
      return "the end of the file";
    case Token::Kind::kQuoted:
      return "\"" + t.word.text + "\"";
    default:
      return "'" + t.word.text + "'";
  }
}

// Recursive descent over the token stream: a body is statements up to '}' (or the end of the
// file at the top level).
class Parser {
 public:
  Parser(std::string_view text, const std::string& path) : lexer_(text, path) {}

  Status Body(std::vector<Statement>& out, const Statement* parent, uint32_t depth) {
    while (true) {
      auto token = lexer_.Next();
      if (!token.ok()) return token.status();
      const Token& t = token.value();
      if (t.kind == Token::Kind::kEnd) {
        if (parent == nullptr) return Status::Ok();
        return lexer_.Error(t.word.where, "expected '}' to close '" + parent->Shown() +
                                              "' (opened at line " +
                                              std::to_string(parent->keyword.where.line) +
                                              "), found the end of the file");
      }
      if (t.kind == Token::Kind::kClose) {
        if (parent != nullptr) return Status::Ok();
        return lexer_.Error(t.word.where, "unexpected '}': no section is open here");
      }
      if (t.kind != Token::Kind::kWord || !IsKeyword(t.word.text)) {
        return lexer_.Error(t.word.where,
                            "expected a keyword (such as resource, on, net, disk "
                            "or an option name), found " +
                                Found(t));
      }
      Statement s;
      s.keyword = t.word;
      if (Status st = Rest(s, depth); !st.ok()) return st;
      out.push_back(std::move(s));
    }
  }

 private:
  // The arguments after the keyword, then ';' or a body.
  Status Rest(Statement& s, uint32_t depth) {
    while (true) {
      auto token = lexer_.Next();
      if (!token.ok()) return token.status();
      Token& t = token.value();
      switch (t.kind) {
        case Token::Kind::kWord:
        case Token::Kind::kQuoted:
          s.args.push_back(std::move(t.word));
          continue;
        case Token::Kind::kSemicolon:
          return Status::Ok();
        case Token::Kind::kOpen:
          if (depth + 1 >= kConfDepthMax) {
            return lexer_.Error(t.word.where, "sections nested deeper than " +
                                                  std::to_string(kConfDepthMax) +
                                                  "; a drbd.conf nests three deep");
          }
          s.has_body = true;
          return Body(s.body, &s, depth + 1);
        case Token::Kind::kClose:
        case Token::Kind::kEnd: {
          // The ';' belongs right after the statement's last word.
          const Location at = s.args.empty() ? s.keyword.end : s.args.back().end;
          return lexer_.Error(at,
                              "expected ';' or '{' after '" + s.Shown() + "', found " + Found(t));
        }
      }
    }
  }

  Lexer lexer_;
};

}  // namespace

std::string Statement::Shown() const {
  std::string text = keyword.text;
  for (const Word& a : args) text += " " + a.text;
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return text;
}

Result<ConfFile> ParseConf(std::string_view text, const std::string& path) {
  if (text.size() > kConfBytesMax) {
    return Status::Invalid(path + ": " + std::to_string(text.size()) +
                           " bytes; a drbd.conf has at most " + std::to_string(kConfBytesMax) +
                           " (is this a drbd.conf?)");
  }
  ConfFile conf;
  conf.path = path;
  Parser parser(text, path);
  if (Status s = parser.Body(conf.statements, nullptr, 0); !s.ok()) return s;
  return conf;
}

}  // namespace repld::drbd
