// Unit tests of the intrusive list (kernel/src/list.h).
#include <catch2/catch.hpp>

#include <cstddef>
#include <vector>

#include "list.h"

namespace {

using spindle::kernel::List;
using spindle::kernel::ListNode;

// The link deliberately not first, so container_of needs a non-zero offset.
struct Elem {
  int value = 0;
  double pad = 0;
  ListNode link;
  ListNode other;  // a second, independent membership
};

using ElemList = List<Elem, &Elem::link>;
using OtherList = List<Elem, &Elem::other>;

template <typename L>
std::vector<int> values(const L& l) {
  std::vector<int> v;
  l.for_each([&](Elem* e) { v.push_back(e->value); });
  return v;
}

// Walks the list backwards through the raw prev pointers: checks that the
// prev chain is consistent with the next chain.
std::vector<int> values_backwards(const ElemList& l) {
  std::vector<int> v;
  if (l.empty()) return v;
  const ListNode* last = &l.back()->link;
  for (const ListNode* p = last;; p = p->prev) {
    const Elem* e = reinterpret_cast<const Elem*>(reinterpret_cast<const char*>(p) - offsetof(Elem, link));
    v.insert(v.begin(), e->value);
    if (e == l.front()) break;
  }
  return v;
}

using V = std::vector<int>;

}  // namespace

TEST_CASE("list: a new list is empty", "[list]") {
  ElemList l;
  CHECK(l.empty());
  CHECK(l.size() == 0);
  CHECK(l.front() == nullptr);
  CHECK(l.back() == nullptr);
  CHECK(l.pop_front() == nullptr);
  CHECK(values(l).empty());
}

TEST_CASE("list: push_back and push_front order", "[list]") {
  Elem e[4];
  for (int i = 0; i < 4; ++i) e[i].value = i;
  ElemList l;
  CHECK_FALSE(e[0].link.linked());
  l.push_back(&e[1]);
  CHECK(e[1].link.linked());
  l.push_back(&e[2]);
  l.push_front(&e[0]);
  l.push_back(&e[3]);
  CHECK_FALSE(l.empty());
  CHECK(l.size() == 4);
  CHECK(l.front() == &e[0]);
  CHECK(l.back() == &e[3]);
  CHECK(values(l) == V{0, 1, 2, 3});
  CHECK(values_backwards(l) == V{0, 1, 2, 3});
}

TEST_CASE("list: pop_front returns elements in order and unlinks them", "[list]") {
  Elem e[3];
  ElemList l;
  for (int i = 0; i < 3; ++i) {
    e[i].value = 10 + i;
    l.push_back(&e[i]);
  }
  CHECK(l.pop_front() == &e[0]);
  CHECK_FALSE(e[0].link.linked());
  CHECK(e[0].link.prev == nullptr);
  CHECK(l.size() == 2);
  CHECK(l.front() == &e[1]);
  CHECK(l.pop_front() == &e[1]);
  CHECK(l.pop_front() == &e[2]);
  CHECK(l.empty());
  CHECK(l.pop_front() == nullptr);
  CHECK(l.front() == nullptr);
}

TEST_CASE("list: remove from front, middle, back and only element", "[list]") {
  Elem e[5];
  ElemList l;
  for (int i = 0; i < 5; ++i) {
    e[i].value = i;
    l.push_back(&e[i]);
  }
  ElemList::remove(&e[2]);  // middle
  CHECK_FALSE(e[2].link.linked());
  CHECK(values(l) == V{0, 1, 3, 4});
  CHECK(values_backwards(l) == V{0, 1, 3, 4});
  ElemList::remove(&e[0]);  // front
  CHECK(l.front() == &e[1]);
  CHECK(values(l) == V{1, 3, 4});
  ElemList::remove(&e[4]);  // back
  CHECK(l.back() == &e[3]);
  CHECK(values(l) == V{1, 3});
  CHECK(values_backwards(l) == V{1, 3});
  ElemList::remove(&e[1]);
  ElemList::remove(&e[3]);  // only element
  CHECK(l.empty());
  CHECK(l.size() == 0);
  CHECK(l.front() == nullptr);
  CHECK(l.back() == nullptr);

  // A removed element can be queued again.
  l.push_back(&e[2]);
  CHECK(l.size() == 1);
  CHECK(l.front() == &e[2]);
  CHECK(l.back() == &e[2]);
}

TEST_CASE("list: insert_before a position, at the front, and at the end", "[list]") {
  Elem e[5];
  for (int i = 0; i < 5; ++i) e[i].value = i;
  ElemList l;
  l.push_back(&e[1]);
  l.push_back(&e[3]);
  l.insert_before(&e[3], &e[2]);  // middle
  CHECK(values(l) == V{1, 2, 3});
  l.insert_before(&e[1], &e[0]);  // before the first: new front
  CHECK(l.front() == &e[0]);
  CHECK(values(l) == V{0, 1, 2, 3});
  l.insert_before(static_cast<Elem*>(nullptr), &e[4]);  // nullptr: at the end
  CHECK(l.back() == &e[4]);
  CHECK(values(l) == V{0, 1, 2, 3, 4});
  CHECK(values_backwards(l) == V{0, 1, 2, 3, 4});
  CHECK(l.size() == 5);
}

TEST_CASE("list: insert_before nullptr into an empty list", "[list]") {
  Elem a;
  a.value = 7;
  ElemList l;
  l.insert_before(static_cast<Elem*>(nullptr), &a);
  CHECK(l.front() == &a);
  CHECK(l.back() == &a);
  CHECK(l.size() == 1);
}

namespace {
template <typename L, typename T>
concept InsertBeforeAcceptsNullptr = requires(L& l, T* t) { l.insert_before(nullptr, t); };
}  // namespace

// BUG (reported, not fixed here): list.h documents "pos == nullptr: at the
// end", but a literal `nullptr` does not compile: std::nullptr_t converts
// equally well to the public insert_before(T*, T*) and to the private
// insert_before(ListNode*, T*), so the call is ambiguous (overload resolution
// happens before access checking). Callers must write static_cast<T*>(nullptr),
// as the test above does. This check fails until the overloads are
// disambiguated (e.g. the private one renamed).
TEST_CASE("list: insert_before accepts a literal nullptr as documented", "[list][bug]") {
  CHECK(InsertBeforeAcceptsNullptr<ElemList, Elem>);
}

TEST_CASE("list: next walks forward and ends with nullptr", "[list]") {
  Elem e[3];
  ElemList l;
  for (int i = 0; i < 3; ++i) {
    e[i].value = i;
    l.push_back(&e[i]);
  }
  CHECK(l.next(&e[0]) == &e[1]);
  CHECK(l.next(&e[1]) == &e[2]);
  CHECK(l.next(&e[2]) == nullptr);
  ElemList::remove(&e[1]);
  CHECK(l.next(&e[0]) == &e[2]);

  ElemList one;
  Elem x;
  one.push_back(&x);
  CHECK(one.next(&x) == nullptr);
}

TEST_CASE("list: for_each may remove the current element", "[list]") {
  Elem e[6];
  ElemList l;
  for (int i = 0; i < 6; ++i) {
    e[i].value = i;
    l.push_back(&e[i]);
  }
  std::vector<int> visited;
  l.for_each([&](Elem* x) {
    visited.push_back(x->value);
    if (x->value % 2 == 0) ElemList::remove(x);
  });
  CHECK(visited == V{0, 1, 2, 3, 4, 5});  // removal did not cut the walk short
  CHECK(values(l) == V{1, 3, 5});
  CHECK(values_backwards(l) == V{1, 3, 5});
  CHECK(l.size() == 3);
  CHECK_FALSE(e[0].link.linked());
  CHECK(e[1].link.linked());

  // Remove everything from inside for_each.
  int n = 0;
  l.for_each([&](Elem* x) {
    ++n;
    ElemList::remove(x);
  });
  CHECK(n == 3);
  CHECK(l.empty());
  CHECK(l.size() == 0);
}

TEST_CASE("list: for_each may move the current element to another list", "[list]") {
  Elem e[4];
  ElemList a, b;
  for (int i = 0; i < 4; ++i) {
    e[i].value = i;
    a.push_back(&e[i]);
  }
  a.for_each([&](Elem* x) {
    if (x->value >= 2) {
      ElemList::remove(x);
      b.push_back(x);
    }
  });
  CHECK(values(a) == V{0, 1});
  CHECK(values(b) == V{2, 3});
}

TEST_CASE("list: an element can be in two lists through two members", "[list]") {
  Elem e[3];
  ElemList by_link;
  OtherList by_other;
  for (int i = 0; i < 3; ++i) {
    e[i].value = i;
    by_link.push_back(&e[i]);
    by_other.push_front(&e[i]);
  }
  CHECK(values(by_link) == V{0, 1, 2});
  CHECK(values(by_other) == V{2, 1, 0});
  OtherList::remove(&e[1]);
  CHECK(values(by_other) == V{2, 0});
  CHECK(values(by_link) == V{0, 1, 2});
  CHECK(by_other.front() == &e[2]);
  CHECK(by_other.next(&e[2]) == &e[0]);
}
