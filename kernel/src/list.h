// Intrusive doubly-linked list. A node is in at most one list at a time; the
// list does not own its elements. All operations are O(1) except size().
#pragma once

#include <cstddef>

namespace spindle::kernel {

struct ListNode {
  ListNode* prev = nullptr;
  ListNode* next = nullptr;
  bool linked() const { return next != nullptr; }
};

// A circular list with a sentinel head. Element type T holds a ListNode
// member named by Member.
template <typename T, ListNode T::*Member>
class List {
 public:
  List() { head_.prev = head_.next = &head_; }
  List(const List&) = delete;
  List& operator=(const List&) = delete;

  bool empty() const { return head_.next == &head_; }
  T* front() const { return empty() ? nullptr : from(head_.next); }
  T* back() const { return empty() ? nullptr : from(head_.prev); }

  void push_back(T* t) { link_before(&head_, t); }
  void push_front(T* t) { link_before(head_.next, t); }
  // Inserts t just before pos (pos == nullptr: at the end).
  void insert_before(T* pos, T* t) { link_before(pos ? &(pos->*Member) : &head_, t); }

  static void remove(T* t) {
    ListNode* n = &(t->*Member);
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = nullptr;
  }
  T* pop_front() {
    T* t = front();
    if (t) remove(t);
    return t;
  }
  // The element after t, or nullptr at the end.
  T* next(const T* t) const {
    ListNode* n = (t->*Member).next;
    return n == &head_ ? nullptr : from(n);
  }
  // The element before t, or nullptr at the front.
  T* prev(const T* t) const {
    ListNode* n = (t->*Member).prev;
    return n == &head_ ? nullptr : from(n);
  }
  std::size_t size() const {
    std::size_t n = 0;
    for (ListNode* p = head_.next; p != &head_; p = p->next) ++n;
    return n;
  }

  template <typename F>
  void for_each(F&& f) const {
    for (ListNode* p = head_.next; p != &head_;) {
      ListNode* nx = p->next;  // f may unlink the element
      f(from(p));
      p = nx;
    }
  }

 private:
  static T* from(const ListNode* n) {
    // container_of for a pointer-to-member: the member's offset measured on
    // a fake, suitably aligned, never dereferenced address (not null, which
    // UBSan rightly rejects).
    const T* probe = reinterpret_cast<const T*>(std::size_t{4096});
    auto off = reinterpret_cast<const char*>(&(probe->*Member)) - reinterpret_cast<const char*>(probe);
    return reinterpret_cast<T*>(reinterpret_cast<char*>(const_cast<ListNode*>(n)) - off);
  }
  void link_before(ListNode* pos, T* t) {
    ListNode* n = &(t->*Member);
    n->next = pos;
    n->prev = pos->prev;
    pos->prev->next = n;
    pos->prev = n;
  }
  ListNode head_;
};

}  // namespace spindle::kernel
