// Test helper: the actions of one kind among those a Replica emitted.
#pragma once

#include <variant>
#include <vector>

#include "replication/replica.h"

namespace repld {

template <typename T>
std::vector<T> All(std::vector<Action> actions) {
  std::vector<T> out;
  for (Action& a : actions) {
    if (auto* t = std::get_if<T>(&a)) out.push_back(std::move(*t));
  }
  return out;
}

}  // namespace repld
